"""GNMT v2: WMT16 English-German translation with LSTMs and normalized Bahdanau attention."""
