"""oa augment."""
