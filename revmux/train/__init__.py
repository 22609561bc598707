"""Training on top of the tuner: classification heads per family, the RevMUX losses, the Trainer, data loading."""
