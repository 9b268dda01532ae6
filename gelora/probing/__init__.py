"""Hidden states of every layer, their intrinsic-dimension profile and its uncertainty."""
