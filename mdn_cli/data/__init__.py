"""The input side: tables and the id join, the design matrix, HDF5 reading and writing, stored
features, the training data and its splits, and the synthetic set. Knows nothing of the terminal.
"""
