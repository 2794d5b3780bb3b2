import textwrap

import numpy as np
import pytest

from mfbo.errors import PriorError
from mfbo.priors import (
    Prior,
    get_prior_class,
    load_prior,
    load_prior_file,
    prior_from_config,
    register_prior,
    registered_priors,
)

MODULE = textwrap.dedent('''\
    import numpy as np
    from mfbo.priors import Prior

    class PreferSmallLr(Prior):
        """log p = -width * log10(lr / centre)^2 (a Gaussian in log10 lr)."""

        def __init__(self, centre=1e-3, width=1.0):
            self.centre, self.width = centre, width

        def log_prob(self, configs):
            lr = np.array([c["lr"] for c in configs], dtype=float)
            return -self.width * np.log10(lr / self.centre) ** 2

    class NotAPrior:
        pass
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_priors_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_priors_mod"


def test_base_class_has_one_required_method():
    class Empty(Prior):
        pass

    with pytest.raises(NotImplementedError, match="log_prob"):
        Empty().log_prob([{}])
    with pytest.raises(PriorError, match="does not implement sample"):
        Empty().sample(3)
    with pytest.raises(PriorError, match="cannot be stored"):
        Empty().to_config()


def test_registry_refuses_duplicates_and_non_priors():
    class Mine(Prior):
        def log_prob(self, configs):
            return np.zeros(len(configs))

    name = "test-registry-mine"
    assert register_prior(name, Mine) is Mine
    assert name in registered_priors() and get_prior_class(name) is Mine
    with pytest.raises(PriorError, match="already registered"):
        register_prior(name, Mine)
    with pytest.raises(PriorError, match="already registered"):
        register_prior("product", Mine)
    with pytest.raises(PriorError, match="subclass"):
        register_prior("test-registry-other", dict)
    with pytest.raises(PriorError, match="without ':'"):
        register_prior("a:b", Mine)
    with pytest.raises(PriorError, match="unknown prior 'nope'"):
        get_prior_class("nope")


def test_dotted_path_loading_and_storing(plugin):
    prior = load_prior(f"{plugin}:PreferSmallLr", centre=1e-2, width=2.0)
    lp = prior.log_prob([{"lr": 1e-2}, {"lr": 1e-3}])
    assert lp.tolist() == pytest.approx([0.0, -2.0])
    cfg = prior.to_config()
    assert cfg == {"class": f"{plugin}:PreferSmallLr", "options": {"centre": 1e-2, "width": 2.0}}
    assert prior_from_config(cfg).log_prob([{"lr": 1e-3}])[0] == pytest.approx(-2.0)
    with pytest.raises(PriorError, match="not a subclass"):
        load_prior(f"{plugin}:NotAPrior")
    with pytest.raises(PriorError, match="has no attribute 'Missing'"):
        load_prior(f"{plugin}:Missing")
    with pytest.raises(PriorError, match="cannot import module"):
        load_prior("no_such_module_xyz:Thing")
    with pytest.raises(PriorError, match="bad options"):
        load_prior(f"{plugin}:PreferSmallLr", colour="red")


def test_prior_file_can_name_a_custom_prior(plugin, tmp_path):
    path = tmp_path / "custom.toml"
    path.write_text(textwrap.dedent(f'''\
        [parameters.lr]
        type = "float"
        bounds = [1e-4, 1e-1]
        scale = "log"

        [custom_prior]
        class = "{plugin}:PreferSmallLr"
        options = {{ centre = 0.001 }}
        '''))
    spec = load_prior_file(path)
    assert type(spec.prior).__name__ == "PreferSmallLr"
    assert spec.prior.log_prob([{"lr": 1e-3}])[0] == 0.0
    assert spec.to_dict()["custom_prior"] == {"class": f"{plugin}:PreferSmallLr", "options": {"centre": 0.001}}
    path.write_text(path.read_text().replace("PreferSmallLr", "Nope"))
    with pytest.raises(PriorError, match=r"custom\.toml:\d+: custom_prior: .*no attribute 'Nope'"):
        load_prior_file(path)


def test_base_module_imports_no_prior_implementation():
    """mfbo.priors._base is imported by the modules that define priors, so it imports none of them
    (built-in priors are named by dotted path and imported on first use)."""
    import ast
    from pathlib import Path

    import mfbo.priors._base as base
    from mfbo.priors._beliefs import ProductPrior

    tree = ast.parse(Path(base.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("mfbo.priors")}, imported
    assert get_prior_class("product") is ProductPrior and "product" in registered_priors()
