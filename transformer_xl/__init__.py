"""Transformer-XL language modelling (WikiText-103, enwik8, text8, One Billion Word)."""
