"""Measuring features and localization against ground truth."""
