"""Training from the user's own data (issue 17): readers, trainer, evaluation."""
