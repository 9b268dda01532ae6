"""The method registry: every fine-tuning method's facts and the builder that puts it on a model."""
