"""The benchmark of the scoring path (`python -m bench`): one real scorer process against
the running stack, with the naive one-message-at-a-time design measured in the same run."""
