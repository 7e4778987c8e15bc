"""Loop pieces shared by the trainers (SFT now; DPO/RM/GRPO later): batching and data order, token-level
loss normalisation, optimizers and schedules, checkpoints, evaluation metrics, logging and plots."""
