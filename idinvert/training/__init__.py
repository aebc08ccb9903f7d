"""Training of the embedded model zoo (GAN, attribute classifier, encoders)."""
