"""Symbolic music as an LM job: music21's corpus written as ABC text (:mod:`.encoding`),
trained on by the LM family like any text corpus, rendered to MIDI and WAV
(:mod:`.render`) and judged by music21 (:mod:`.quality`)."""
