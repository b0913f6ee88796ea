"""DesignMatrix encoding (fit on train rows, apply anywhere) and the Gram inverse's errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mdn_cli.data.design import INTERCEPT, DesignMatrix
from mdn_cli.nn import CollinearDesignError, gram_inverse
from mdn_cli.utils.errors import MdnError


@pytest.fixture
def table(rng) -> pd.DataFrame:
    n = 40
    return pd.DataFrame(
        {
            "label": rng.integers(0, 2, n),
            "age": rng.normal(50, 10, n),
            "site": rng.choice(["b", "a", "c"], n),
            "score": rng.uniform(0, 1, n),
        }
    )


def test_numeric_standardised_with_training_statistics(table):
    train, other = table.iloc[:30], table.iloc[30:]
    design = DesignMatrix(["age"]).fit(train)
    mean, std = train["age"].mean(), train["age"].std(ddof=0)
    x_train = design.transform(train)
    assert design.column_names == ["age", INTERCEPT]
    np.testing.assert_allclose(x_train[:, 0], (train["age"] - mean) / std, atol=1e-12)
    assert x_train[:, 0].mean() == pytest.approx(0.0, abs=1e-12)
    assert x_train[:, 0].std() == pytest.approx(1.0, abs=1e-12)
    # other rows use the *training* mean and std, not their own
    x_other = design.transform(other)
    np.testing.assert_allclose(x_other[:, 0], (other["age"].to_numpy() - mean) / std, atol=1e-12)
    assert abs(x_other[:, 0].mean()) > 1e-6
    np.testing.assert_array_equal(x_other[:, 1], 1.0)


def test_raw_design_keeps_numeric_units_and_survives_a_round_trip(table):
    """`standardize=False`: the references' design, numbers as they are, one-hot levels as usual."""
    design = DesignMatrix(["age", "site"], preserve=["label"], standardize=False).fit(table.iloc[:30])
    x = design.transform(table)
    assert design.column_names == ["label", "age", "site=b", "site=c", INTERCEPT]
    np.testing.assert_array_equal(x[:, 0], table["label"])
    np.testing.assert_array_equal(x[:, 1], table["age"])
    np.testing.assert_array_equal(x[:, 2:4], np.stack([table["site"] == "b", table["site"] == "c"], 1))
    restored = DesignMatrix.from_dict(json.loads(json.dumps(design.to_dict())))
    assert restored.standardize is False
    np.testing.assert_array_equal(restored.transform(table), x)
    with pytest.raises(MdnError, match="constant"):
        DesignMatrix(["age"], standardize=False).fit(table.assign(age=7.0))


def test_categorical_one_hot_drops_first_sorted_level(table):
    design = DesignMatrix(["site"]).fit(table)
    assert design.column_names == ["site=b", "site=c", INTERCEPT]
    x = design.transform(table)
    np.testing.assert_array_equal(x[:, 0], (table["site"] == "b").to_numpy().astype(float))
    np.testing.assert_array_equal(x[:, 1], (table["site"] == "c").to_numpy().astype(float))
    reference_rows = (table["site"] == "a").to_numpy()
    np.testing.assert_array_equal(x[reference_rows, :2], 0.0)
    assert set(np.unique(x[:, :2])) == {0.0, 1.0}


def test_numeric_codes_declared_categorical(rng):
    table = pd.DataFrame({"scanner": [3, 1, 2, 1, 3, 2, 2], "x": rng.normal(size=7)})
    design = DesignMatrix(["scanner"], categorical=["scanner"]).fit(table)
    assert design.column_names == ["scanner=2", "scanner=3", INTERCEPT]
    # float codes (e.g. after a NaN-free CSV round trip) map to the same levels
    x = design.transform(table.assign(scanner=table["scanner"].astype(float)))
    np.testing.assert_array_equal(x[:, 0], (table["scanner"] == 2).to_numpy().astype(float))


def test_several_columns_preserved_lead_intercept_last(table):
    design = DesignMatrix(["age", "site", "score"], preserve=["label"]).fit(table)
    assert design.column_names == ["label", "age", "site=b", "site=c", "score", INTERCEPT]
    assert design.num_columns == 6
    assert design.num_preserved == 1
    x = design.transform(table)
    assert x.shape == (40, 6) and x.dtype == np.float64
    lab = table["label"].to_numpy(float)
    np.testing.assert_allclose(x[:, 0], (lab - lab.mean()) / lab.std(), atol=1e-12)
    np.testing.assert_array_equal(x[:, -1], 1.0)


def test_categorical_preserved_column_counts_all_its_columns(table):
    design = DesignMatrix(["age"], preserve=["site"]).fit(table)
    assert design.column_names[:2] == ["site=b", "site=c"]
    assert design.num_preserved == 2


def test_to_dict_from_dict_round_trip(table):
    design = DesignMatrix(["age", "site"], preserve=["label"], categorical=["label"]).fit(table.iloc[:30])
    state = json.loads(json.dumps(design.to_dict()))  # must survive JSON
    restored = DesignMatrix.from_dict(state)
    assert restored.column_names == design.column_names
    assert restored.num_preserved == design.num_preserved
    np.testing.assert_array_equal(restored.transform(table), design.transform(table))


def test_unseen_level_names_column_and_level(table):
    design = DesignMatrix(["site"]).fit(table)
    with pytest.raises(MdnError) as info:
        design.transform(pd.DataFrame({"site": ["a", "zzz"]}))
    message = str(info.value)
    assert "'site'" in message and "'zzz'" in message and "not seen" in message


def test_missing_values_error_names_column_and_rows(table):
    broken = table.copy()
    broken.loc[[3, 7], "age"] = np.nan
    with pytest.raises(MdnError, match=r"column 'age' has 2 missing value\(s\) \(rows 3, 7\)"):
        DesignMatrix(["age"]).fit(broken)
    design = DesignMatrix(["age"]).fit(table)
    with pytest.raises(MdnError, match="'age' has 2 missing"):
        design.transform(broken)


def test_missing_column_suggests_close_names(table):
    with pytest.raises(MdnError, match="no column 'agee'") as info:
        DesignMatrix(["agee"]).fit(table)
    assert "did you mean `age`" in str(info.value)


@pytest.mark.parametrize(
    "values, what",
    [([2.0] * 6, "is constant"), ([0.1] * 7, "is constant"), (["x"] * 5, "has a single level")],
)
def test_constant_column_error(values, what):
    with pytest.raises(MdnError, match=f"column 'c' {what}"):
        DesignMatrix(["c"]).fit(pd.DataFrame({"c": values}))


def test_preserved_and_metadata_overlap_rejected():
    with pytest.raises(MdnError, match="both preserved and metadata"):
        DesignMatrix(["a", "b"], preserve=["b"])
    with pytest.raises(MdnError, match="no metadata"):
        DesignMatrix([])


def test_unfitted_design_is_an_error():
    with pytest.raises(RuntimeError, match="not fitted"):
        DesignMatrix(["a"]).transform(pd.DataFrame({"a": [1.0]}))


# -- Gram inverse ------------------------------------------------------------------------------
def test_gram_inverse_matches_numpy(table):
    design = DesignMatrix(["age", "site"], preserve=["label"]).fit(table)
    x = design.transform(table)
    np.testing.assert_allclose(gram_inverse(x, design.column_names), np.linalg.inv(x.T @ x), atol=1e-12)


def test_duplicated_column_is_collinear_and_named(table):
    design = DesignMatrix(["age", "age2", "score"], preserve=["label"])
    dup = table.assign(age2=table["age"] * 3 + 2)  # same after standardising
    x = design.fit_transform(dup)
    with pytest.raises(CollinearDesignError, match="collinear") as info:
        gram_inverse(x, design.column_names)
    involved = str(info.value).split("columns ")[1].split(" are collinear")[0].split(", ")
    assert involved == ["age", "age2"]


def test_determined_one_hot_level_is_collinear_and_named(rng):
    n = 60
    site = rng.choice(["s1", "s2", "s3"], n)
    scanner = pd.Series(site).map({"s1": "A", "s2": "B", "s3": "B"})  # scanner=B <=> site is s2 or s3
    table = pd.DataFrame({"site": site, "scanner": scanner, "age": rng.normal(size=n)})
    design = DesignMatrix(["site", "scanner", "age"])
    x = design.fit_transform(table)
    assert design.column_names == ["site=s2", "site=s3", "scanner=B", "age", INTERCEPT]
    with pytest.raises(CollinearDesignError, match="singular") as info:
        gram_inverse(x, design.column_names)
    involved = set(str(info.value).split("columns ")[1].split(" are collinear")[0].split(", "))
    assert {"site=s2", "site=s3", "scanner=B"} <= involved
    assert "age" not in involved
    assert "ridge" in str(info.value)  # the hint says how to get out


def test_nearly_collinear_units_do_not_matter(rng):
    # a column in tiny units is fine (the check is scale-free); a near-copy is not
    n = 50
    a = rng.normal(size=n)
    x_ok = np.c_[a * 1e-8, rng.normal(size=n) * 1e6, np.ones(n)]
    y = x_ok @ np.array([1e8, 1e-6, 2.0]) + rng.normal(size=n)
    np.testing.assert_allclose(gram_inverse(x_ok) @ x_ok.T @ y, np.linalg.lstsq(x_ok, y, rcond=None)[0], rtol=1e-8)
    x_bad = np.c_[a, a + 1e-9 * rng.normal(size=n), np.ones(n)]
    with pytest.raises(CollinearDesignError, match="column 0, column 1 are collinear"):
        gram_inverse(x_bad)


def test_ridge_makes_a_singular_design_invertible(table):
    x = np.c_[table["age"], table["age"], np.ones(len(table))]
    with pytest.raises(CollinearDesignError):
        gram_inverse(x)
    ridge = 1e-3
    k = gram_inverse(x, ridge=ridge)
    n = len(table)
    assert np.isfinite(k).all()
    np.testing.assert_allclose(k, np.linalg.inv(x.T @ x + ridge * n * np.eye(3)), rtol=1e-8)


def test_numeric_levels_sort_by_value_and_text_alphabetically():
    numeric = pd.DataFrame({"site": [10, 2, 1, 2, 10, 1], "age": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    design = DesignMatrix(["site"], categorical=["site"]).fit(numeric)
    assert design.encodings[0].levels == ["1", "2", "10"]  # '1' is the reference, not '10' < '2'
    x = design.transform(numeric)
    np.testing.assert_array_equal(x[:, :2], [[0, 1], [1, 0], [0, 0], [1, 0], [0, 1], [0, 0]])
    floats = DesignMatrix(["site"], categorical=["site"]).fit(numeric.assign(site=numeric["site"].astype(float)))
    assert floats.encodings[0].levels == ["1", "2", "10"]
    text = DesignMatrix(["site"]).fit(numeric.assign(site=["b10", "b2", "a", "b2", "b10", "a"]))
    assert text.encodings[0].levels == ["a", "b10", "b2"]
