"""Soft prompts on a frozen model, in torch: the methods (one file each), the model wrapper, the
collator and the scoring of label answers. Used by training, evaluation and serving alike."""
