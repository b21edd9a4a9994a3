"""Data layouts, all read into the same `CategorySplit` of `Sample`s.

`load_category` raises on the first structural problem (cheap checks, no decoding);
`l2bt.data.checks.check_category` collects every problem of a tree, decoding every file.
"""

from l2bt.data.image_io import read_image, read_mask
from l2bt.data.layouts import DATASETS, list_categories, load_category
from l2bt.data.problems import DataProblem, Problems
from l2bt.data.sample import CategorySplit, Sample

__all__ = [
    "DATASETS",
    "CategorySplit",
    "DataProblem",
    "Problems",
    "Sample",
    "list_categories",
    "load_category",
    "read_image",
    "read_mask",
]
