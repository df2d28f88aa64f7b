"""Runtime: a frozen causal LM + a soft prompt (``promptreg.softprompt.soft_model.SoftPromptModel``)."""
