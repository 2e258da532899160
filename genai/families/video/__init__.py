"""The video family (in progress): moving digits built offline (:mod:`.clips`). The model,
its training task, serving and registration as a family come next."""
