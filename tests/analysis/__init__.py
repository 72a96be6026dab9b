"""Weight analysis: tensor access and the diff of two versions of a model."""
