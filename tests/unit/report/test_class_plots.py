"""Confusion figures over many classes: the ranked top confusions against a slow loop."""

from __future__ import annotations

import numpy as np

from stress.analyses.failures import confusion_matrix
from stress.report.class_plots import MAX_MATRIX_CLASSES, plot_confusion, top_confusions


def slow_top(matrix: np.ndarray, top: int) -> list[tuple[int, int, int]]:
    cells = [(-int(matrix[i, j]), i, j) for i in range(len(matrix)) for j in range(len(matrix)) if i != j and matrix[i, j] > 0]
    return [(i, j, -c) for c, i, j in sorted(cells)[:top]]


def test_top_confusions_match_a_loop_over_cells_with_ties_in_class_order():
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 100, 3000), rng.integers(0, 100, 3000)
    predicted[:400] = labels[:400]  # a diagonal that must be left out
    predicted[400:460], labels[400:460] = 7, 3  # one planted dominant confusion
    matrix = confusion_matrix(labels, predicted, 100)
    assert top_confusions(matrix, 25) == slow_top(matrix, 25)
    assert top_confusions(matrix, 1)[0][:2] == (3, 7)
    # Planted: a diagonal cell never counts, however large.
    diag = np.zeros((3, 3), int)
    diag[0, 0], diag[1, 2] = 50, 1
    assert top_confusions(diag) == [(1, 2, 1)]


def test_many_classes_draw_the_ranked_bars_not_a_matrix(tmp_path):
    names = tuple(f"class {i}" for i in range(100))
    labels = np.arange(1000) % 100
    matrix = confusion_matrix(labels, (labels + 1) % 100, 100)
    big = plot_confusion(matrix, "t", tmp_path / "big.png", names)
    small = plot_confusion(confusion_matrix(labels % 10, (labels + 1) % 10, 10), "t", tmp_path / "small.png", names[:10])
    from PIL import Image

    wide, tall = Image.open(big).size
    assert tall > wide  # a bar per confusion, stacked: taller than wide; the 10x10 matrix is about square
    w, h = Image.open(small).size
    assert 0.7 < w / h < 1.4 and MAX_MATRIX_CLASSES == 20
