"""Model training, as the cloud would run it (dev extra: TensorFlow in .venv-train).

.venv-train/bin/python -m tools.train all --seed 1
"""
