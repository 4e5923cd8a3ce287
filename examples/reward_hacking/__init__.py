"""Watch a real GRPO policy game rmserve's reward model, and rmserve's signals catch it (`make demo`)."""
