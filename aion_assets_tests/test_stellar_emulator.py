"""The stellar emulator: set-encoder invariances, random-subset batches, packing, save/load, and a learned toy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aion_assets.stellar.emulator import (
    CPU_DEFAULT,
    REFERENCE,
    EmulatorConfig,
    StellarEmulator,
    TokenTable,
    load_emulator,
    predict,
    read_emulator_extra,
    save_emulator,
    train_emulator,
    training_batch,
)

torch.set_num_threads(1)

NAMES = ("teff", "logg", "m_h", "bprp", "jk")
TINY = EmulatorConfig(names=NAMES, embedding_dim=16, num_layers=2, num_heads=2, ff_dim=32, dropout=0.0,
                      head_layers=2, head_width=16, diffusion_steps=20)


def _random_inputs(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each star: ``length`` distinct names in random order, random values, and a query name not among them."""
    generator = torch.Generator().manual_seed(seed)
    orders = torch.stack([torch.randperm(len(NAMES), generator=generator) for _ in range(batch)]) + 1
    tokens, query = orders[:, :length], orders[:, length]
    return torch.randn(batch, length, generator=generator), tokens, query


def _toy_table(n: int, seed: int) -> TokenTable:
    """x ~ N(0, 1) and y = 2x + N(0, 0.1): y's prior is N(0, 2) while y | x is narrow."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 2.0 * x + 0.1 * rng.normal(size=n)
    return TokenTable(np.stack([x, y], axis=1), np.tile([1, 2], (n, 1)), ("x", "y"))


@pytest.fixture(scope="module")
def toy_model() -> StellarEmulator:
    config = EmulatorConfig(names=("x", "y"), embedding_dim=32, num_layers=1, num_heads=2, ff_dim=64, dropout=0.0,
                            head_layers=3, head_width=64)
    model, curve = train_emulator(_toy_table(3500, 0), _toy_table(500, 1), config, steps=500, batch_size=256,
                                  lr=1e-2, seed=0, eval_every=250)
    assert [row["step"] for row in curve] == [250, 500]
    assert curve[-1]["validation_loss"] < curve[0]["validation_loss"] + 0.05
    return model


def test_config_round_trip_and_presets() -> None:
    assert EmulatorConfig.from_dict(TINY.to_dict() | {"unknown": 1}) == TINY
    assert TINY.to_dict()["names"] == list(NAMES) and TINY.token("teff") == 1 and TINY.token("jk") == 5
    assert CPU_DEFAULT.names == () and CPU_DEFAULT.with_names(NAMES).names == NAMES
    assert (REFERENCE.embedding_dim, REFERENCE.num_layers, REFERENCE.head_layers, REFERENCE.head_width) == \
        (192, 2, 5, 512)
    assert REFERENCE.diffusion_steps == CPU_DEFAULT.diffusion_steps == 120
    with pytest.raises(ValueError, match="unique"):
        EmulatorConfig(names=("a", "a"))
    with pytest.raises(ValueError, match="divisible"):
        EmulatorConfig(names=("a",), embedding_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="names is empty"):
        StellarEmulator(CPU_DEFAULT)


@pytest.mark.parametrize("training", [False, True])
def test_encoder_is_invariant_to_the_order_of_its_input_tokens(training: bool) -> None:
    torch.manual_seed(0)
    model = StellarEmulator(TINY).train(training)  # dropout 0, so train mode is deterministic too
    values, tokens, query = _random_inputs(8, 4)
    base = model.encode(values, tokens, query)
    assert base.shape == (8, TINY.embedding_dim)
    for seed in range(3):
        perm = torch.randperm(4, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(model.encode(values[:, perm], tokens[:, perm], query), base, atol=1e-5)
    # but the values, the names and the query all matter
    assert not torch.allclose(model.encode(values + 1.0, tokens, query), base, atol=1e-3)
    assert not torch.allclose(model.encode(values, tokens.roll(1, dims=0), query), base, atol=1e-3)
    assert not torch.allclose(model.encode(values, tokens, query.roll(1)), base, atol=1e-3)


@pytest.mark.parametrize("training", [False, True])
def test_encoder_ignores_masked_positions(training: bool) -> None:
    torch.manual_seed(0)
    model = StellarEmulator(TINY).train(training)
    values, tokens, query = _random_inputs(6, 3)
    base = model.encode(values, tokens, query)
    # two extra columns: one padding (token 0) with a junk value, one with a real name but a NaN value
    junk_values = torch.cat([values, torch.full((6, 1), 123.0), torch.full((6, 1), float("nan"))], dim=1)
    junk_tokens = torch.cat([tokens, torch.zeros(6, 1, dtype=torch.long), query[:, None]], dim=1)
    padded = model.encode(junk_values, junk_tokens, query)
    assert torch.isfinite(padded).all()
    assert torch.allclose(padded, base, atol=1e-5)
    # changing the padded value, and the name behind the NaN, changes nothing either
    junk_values[:, 3] = -7.0
    junk_tokens[:, 4] = tokens[:, 0]
    assert torch.allclose(model.encode(junk_values, junk_tokens, query), base, atol=1e-5)
    # and the masked columns can sit anywhere, e.g. first
    order = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(model.encode(junk_values[:, order], junk_tokens[:, order], query), base, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_length_buckets_give_the_same_encoding_as_one_padded_pass(training: bool) -> None:
    torch.manual_seed(0)
    model = StellarEmulator(TINY).train(training)
    values, tokens, query = _random_inputs(50, 4, seed=1)
    # 0 to 4 inputs per star, missing ones scattered (padding or NaN), so buckets differ in width
    generator = torch.Generator().manual_seed(2)
    dropped = torch.rand(50, 4, generator=generator) < torch.linspace(0, 1, 50)[:, None]
    tokens = tokens.masked_fill(dropped & (torch.rand(50, 4, generator=generator) < 0.5), 0)
    values = values.masked_fill(dropped, float("nan"))
    one_pass = model.encode(values, tokens, query, bucket_rows=1000)
    for bucket_rows in (7, 16, 49):
        assert torch.allclose(model.encode(values, tokens, query, bucket_rows=bucket_rows), one_pass, atol=1e-5)


def test_a_star_with_no_inputs_is_encoded_from_its_query_alone() -> None:
    torch.manual_seed(0)
    model = StellarEmulator(TINY).eval()
    query = torch.tensor([1, 2, 5])
    empty = model.encode(torch.zeros(3, 0), torch.zeros(3, 0, dtype=torch.long), query)
    all_padding = model.encode(torch.randn(3, 4), torch.zeros(3, 4, dtype=torch.long), query)
    assert torch.isfinite(empty).all() and torch.allclose(empty, all_padding, atol=1e-5)
    samples = model.sample(torch.zeros(3, 0), torch.zeros(3, 0, dtype=torch.long), query, 5)
    assert samples.shape == (3, 5) and torch.isfinite(samples).all()
    with pytest.raises(ValueError, match="query tokens"):
        model.encode(torch.zeros(1, 0), torch.zeros(1, 0, dtype=torch.long), torch.tensor([0]))


def test_from_rows_packs_long_rows_into_padded_arrays() -> None:
    star = np.array([2, 0, 2, 0, 2, 3])
    name = np.array([4, 1, 0, 3, 2, 0])
    value = np.array([5.0, 1.0, 3.0, 2.0, np.nan, 7.0])  # the NaN row is a missing measurement: dropped
    table = TokenTable.from_rows(star, name, value, n_stars=5, names=NAMES)
    assert table.values.shape == table.tokens.shape == (5, 2)
    assert table.values.dtype == np.float32 and table.tokens.dtype == np.int64
    assert table.tokens.tolist() == [[2, 4], [0, 0], [1, 5], [1, 0], [0, 0]]
    assert table.values.tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, 5.0], [7.0, 0.0], [0.0, 0.0]]
    assert table.known.sum(axis=1).tolist() == [2, 0, 2, 1, 0]
    with pytest.raises(ValueError, match="more than once"):
        TokenTable.from_rows(np.array([1, 1]), np.array([3, 3]), np.array([1.0, 2.0]), 2, NAMES)
    with pytest.raises(ValueError, match="name_index"):
        TokenTable.from_rows(np.array([0]), np.array([5]), np.array([1.0]), 1, NAMES)


def test_training_batch_never_feeds_the_target_and_varies_the_subset() -> None:
    rng = np.random.default_rng(0)
    n = 400
    tokens = np.argsort(rng.random((n, 5)), axis=1) + 1  # every star: all five names, in a random order
    tokens[:, 1:][rng.random((n, 4)) < 0.3] = 0  # some missing, the first always known
    values = rng.normal(size=(n, 5)).astype(np.float32)
    values[:, 1:][rng.random((n, 4)) < 0.05] = np.nan  # a NaN value is missing too
    values[tokens == 0] = 99.0  # junk under padding must never be used
    table = TokenTable(values, tokens, NAMES)
    known = table.known
    sizes, targets = [], []
    for _ in range(20):
        index = rng.choice(len(table), 64, replace=False)
        inputs, input_tokens, query, target = training_batch(table, index, rng)
        assert input_tokens.dtype == query.dtype == torch.int64 and inputs.dtype == target.dtype == torch.float32
        for i, star in enumerate(index):
            mine = known[star]
            star_values = dict(zip(table.tokens[star][mine].tolist(), table.values[star][mine], strict=True))
            fed = input_tokens[i][input_tokens[i] > 0].tolist()
            assert int(query[i]) in star_values and float(target[i]) == star_values[int(query[i])]
            assert int(query[i]) not in fed  # the target is never among its own inputs
            assert len(set(fed)) == len(fed) and set(fed) <= set(star_values)
            assert all(float(inputs[i, j]) == star_values[int(t)] for j, t in enumerate(input_tokens[i]) if t > 0)
            assert (inputs[i][input_tokens[i] == 0] == 0).all()
            sizes.append((len(fed), len(star_values)))
            targets.append((int(query[i]), int(table.tokens[star, 0])))
    n_fed = np.array([fed for fed, _ in sizes])
    n_other = np.array([total - 1 for _, total in sizes])
    assert (n_fed <= n_other).all()
    assert (n_fed == 0).mean() > 0.1 and ((n_fed == n_other) & (n_other >= 3)).any()  # both extremes occur
    assert len(set(n_fed.tolist())) == 5  # 0..4 inputs
    # targets are spread over every name and position, not just the first known one (always known here: ~27%)
    assert {name for name, _ in targets} == {1, 2, 3, 4, 5}
    assert np.mean([name == first for name, first in targets]) < 0.4
    with pytest.raises(ValueError, match="at least one known"):
        training_batch(TokenTable(np.zeros((2, 2)), np.array([[1, 2], [0, 0]]), NAMES), np.array([0, 1]), rng)


def test_training_is_deterministic_for_a_seed_and_reports_its_curve() -> None:
    train, validation = _toy_table(300, 0), _toy_table(100, 1)
    config = EmulatorConfig(embedding_dim=16, num_layers=1, num_heads=2, ff_dim=32, dropout=0.1,
                            head_layers=2, head_width=16, diffusion_steps=20)  # names come from the table
    seen: list[tuple[int, float, float]] = []
    first, curve = train_emulator(train, validation, config, steps=30, batch_size=64, lr=3e-3, seed=5,
                                  on_eval=lambda *row: seen.append(row), eval_every=10)
    second, again = train_emulator(train, validation, config, steps=30, batch_size=64, lr=3e-3, seed=5,
                                   eval_every=10)
    assert first.config.names == ("x", "y") and not first.training
    assert [row["step"] for row in curve] == [10, 20, 30]
    assert seen == [(row["step"], row["train_loss"], row["validation_loss"]) for row in curve]
    assert curve == again
    for (name, tensor), other in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(tensor, other), name
    third, _ = train_emulator(train, validation, config, steps=30, batch_size=64, lr=3e-3, seed=6, eval_every=10)
    assert not torch.equal(third.value_weight, first.value_weight)


def test_save_and_load_give_identical_samples(tmp_path, toy_model: StellarEmulator) -> None:
    path = save_emulator(toy_model, tmp_path / "deep" / "emulator.pt", extra={"mean": [1.0, 2.0], "run": "abc"})
    loaded = load_emulator(path)
    assert loaded.config == toy_model.config and not loaded.training
    assert read_emulator_extra(path) == {"mean": [1.0, 2.0], "run": "abc"}
    assert not list(path.parent.glob("*.tmp"))
    stars = [{"x": 0.3}, {}, {"x": -1.2}]
    assert np.array_equal(predict(loaded, stars, "y", 50, seed=4), predict(toy_model, stars, "y", 50, seed=4))
    assert not np.array_equal(predict(loaded, stars, "y", 50, seed=5), predict(loaded, stars, "y", 50, seed=4))


def test_load_rejects_unknown_versions_and_foreign_files(tmp_path, toy_model: StellarEmulator) -> None:
    path = save_emulator(toy_model, tmp_path / "emulator.pt")
    payload = torch.load(path, weights_only=True)
    torch.save(payload | {"format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format version 99"):
        load_emulator(tmp_path / "future.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a stellar emulator file"):
        load_emulator(tmp_path / "other.pt")


def test_predict_checks_names(toy_model: StellarEmulator) -> None:
    with pytest.raises(ValueError, match="unknown input names: colour, z"):
        predict(toy_model, [{"x": 1.0, "z": 2.0}, {"colour": 0.1}], "y", 3, seed=0)
    with pytest.raises(ValueError, match="among the inputs of star"):
        predict(toy_model, [{"x": 1.0}, {"y": 2.0}], "y", 3, seed=0)
    with pytest.raises(ValueError, match="unknown target"):
        predict(toy_model, [{"x": 1.0}], "teff", 3, seed=0)
    assert predict(toy_model, [], "y", 3, seed=0).shape == (0, 3)


def test_toy_relation_is_learned(toy_model: StellarEmulator) -> None:
    xs = np.array([-1.5, -0.5, 0.0, 0.7, 1.4])
    samples = predict(toy_model, [{"x": float(x)} for x in xs], "y", 400, seed=0)
    assert samples.shape == (5, 400)
    np.testing.assert_allclose(np.median(samples, axis=1), 2.0 * xs, atol=0.2)
    assert (samples.std(axis=1) < 0.4).all()  # y | x is narrow (true 0.1); the prior is 2.0 wide
    # the inverse question of the same model: x given y
    inverse = predict(toy_model, [{"y": 1.0}, {"y": -2.0}], "x", 400, seed=0)
    np.testing.assert_allclose(np.median(inverse, axis=1), [0.5, -1.0], atol=0.15)


def test_no_inputs_give_the_prior(toy_model: StellarEmulator) -> None:
    prior = predict(toy_model, [{}], "y", 2000, seed=1)[0]
    given = predict(toy_model, [{"x": 1.0}], "y", 2000, seed=1)[0]
    # the marginal of y is N(0, 2.0); given x = 1 it is N(2, 0.1)
    assert abs(prior.mean()) < 0.3 and 1.7 < prior.std() < 2.3
    assert abs(given.mean() - 2.0) < 0.2 and given.std() < 0.4
    assert (np.abs(prior - 2.0) < 0.5).mean() < 0.35 < (np.abs(given - 2.0) < 0.5).mean()


def test_weighted_batches_draw_stars_by_weight_and_refuse_bad_weights() -> None:
    from aion_assets.stellar.emulator import _weighted_batches

    weights = np.array([1.0] * 900 + [9.0] * 100)  # the last hundred stars hold half the weight
    batches = _weighted_batches(np.arange(1000), weights, 20, np.random.default_rng(0))
    drawn = [next(batches) for _ in range(200)]
    assert all(len(set(batch)) == 20 for batch in drawn)  # no star twice in one batch
    assert 0.45 < np.mean(np.concatenate(drawn) >= 900) < 0.55
    config = EmulatorConfig(names=("x", "y"), embedding_dim=8, num_layers=1, num_heads=2, ff_dim=16, dropout=0.0,
                            head_layers=1, head_width=8, diffusion_steps=5)
    table = _toy_table(40, 0)
    with pytest.raises(ValueError, match="one positive weight per train star"):
        train_emulator(table, table, config, steps=1, batch_size=8, lr=1e-3, seed=0, star_weights=np.zeros(40))
    model, curve = train_emulator(table, table, config, steps=2, batch_size=8, lr=1e-3, seed=0, eval_every=1,
                                  star_weights=np.ones(40), noise_draws=3)
    assert len(curve) == 2
