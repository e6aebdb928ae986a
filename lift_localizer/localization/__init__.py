"""Localization against a map: descriptor matching, then robust absolute pose."""
