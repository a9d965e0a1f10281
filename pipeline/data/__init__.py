"""Datasets: the catalog (sources, files, hashes, readers), label tables, the generated garments."""
