"""The notebooks' kit: the papermill pipeline and its profiles, notebook helpers, figures, the book, exercises."""
