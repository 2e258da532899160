"""The LM serving engine: iteration-level (continuous) batched decoding for causal LMs,
torch only (:mod:`.batch`), per-sequence sampling and stop text (:mod:`.generation`), and
the lean GPT-2 forward pass (:mod:`.fastpath`).

One :class:`BatchDecoder` holds the sequences being generated. Each :meth:`step`
retires the ones that finished or were cancelled, admits waiting ones (their
prompts prefilled together), then runs **one** forward pass that extends every
active sequence by a token. A replica's concurrent requests thus share forward
passes: a decode step for 32 sequences costs little more than one for a single
sequence, so batching multiplies tokens/s.

The batch's KV cache is a ``transformers`` ``DynamicCache`` whose rows are
left-padded to a common length, with an attention mask and per-row position
ids, so any Hugging Face causal LM that accepts ``attention_mask`` and
``position_ids`` (GPT-2, Llama) runs unchanged, on the CPU or a GPU.

Every sequence keeps its own sampling settings and its own ``torch.Generator``
(one uniform draw per token), so a seed gives the same tokens whatever else is
in the batch, up to float rounding of a batched against an unbatched forward.
"""
