"""The update: ``train()``'s loop (trainer.py), minibatches gathered as SB3 gathers them,
advantages, scoring a minibatch, the compiled path and the optimizer step."""
