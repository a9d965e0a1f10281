"""Matplotlib drawings on the Agg canvas: confusion matrices, curves, image grids. No TensorFlow."""
