"""Runtime: a frozen causal LM + a soft prompt (``promptreg.runtime.soft_model.SoftPromptModel``)."""
