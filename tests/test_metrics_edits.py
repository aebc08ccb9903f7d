import math

import torch

from bench.metrics import edit_preservation, edit_success


def test_edit_success_counts_only_edits_that_started_on_the_other_side():
    # target column 0; direction +1 (make the attribute present)
    before = torch.tensor([[0.1, 0.9], [0.2, 0.1], [0.3, 0.8], [0.9, 0.2]])
    after = torch.tensor([[0.8, 0.9], [0.4, 0.1], [0.7, 0.3], [0.95, 0.2]])
    result = edit_success(before, after, target=0, direction=1)
    # rows 0-2 eligible (predicted absent); rows 0 and 2 flipped; row 3 was already present
    assert (result.n_eligible, result.n_success) == (3, 2)
    assert math.isclose(result.rate, 2 / 3)


def test_edit_success_with_negative_and_per_edit_directions():
    before = torch.tensor([0.9, 0.9, 0.1, 0.1])
    after = torch.tensor([0.2, 0.6, 0.8, 0.0])
    assert edit_success(before, after, direction=-1).rate == 0.5  # rows 0, 1 eligible; row 0 flipped
    signs = torch.tensor([-1, 0, 1, 1])  # row 1 had alpha = 0: not an edit
    result = edit_success(before, after, direction=signs)
    assert (result.n_eligible, result.n_success) == (3, 2)


def test_edit_success_without_eligible_edits_is_nan():
    assert math.isnan(edit_success(torch.tensor([0.9]), torch.tensor([0.9]), direction=1).rate)


def test_edit_preservation_ignores_the_target_attribute():
    before = torch.tensor([[0.1, 0.9, 0.2], [0.2, 0.8, 0.7]])
    after = torch.tensor([[0.9, 0.9, 0.2], [0.9, 0.1, 0.7]])  # target 0 flips; attr 1 flips once
    result = edit_preservation(before, after, target=0)
    assert math.isclose(result.agreement, 3 / 4)
    assert math.isnan(result.per_attribute[0]) and result.per_attribute[1:] == [0.5, 1.0]
