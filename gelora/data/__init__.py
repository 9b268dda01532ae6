"""Text tasks: the shipped datasets, the user's own tables, splits and tokenised loaders."""
