"""Priors over hyperparameters: prior files, physics-derived GMP priors and pluggable custom priors.

- :class:`Prior` (one required method, ``log_prob``), :func:`register_prior`, :func:`load_prior`
  (registry name or dotted path ``"pkg.module:ClassName"``).
- :class:`Constraint`, parsed safely from strings such as ``"cutoff >= 3 * sigma_max"``.
- :func:`load_prior_file` -> :class:`PriorSpec` (``.space``, ``.prior``, ``.constraints``,
  ``.fidelities``); :func:`write_prior_file` writes one back.
- :func:`gmp_fp_params` maps the GMP search parameters to the engine's fp_params.
- :func:`derive_gmp_prior` builds a prior from the structures themselves (``mfbo priors derive``).
"""

__all__ = [
    "Prior",
    "ProductPrior",
    "Belief",
    "register_prior",
    "registered_priors",
    "get_prior_class",
    "load_prior",
    "prior_from_config",
    "Constraint",
    "ConstraintError",
    "DERIVED",
    "parse_constraint",
    "PriorSpec",
    "PriorFileError",
    "load_prior_file",
    "parse_prior_dict",
    "dump_prior_spec",
    "write_prior_file",
    "merge_prior_specs",
    "gmp_fp_params",
    "gmp_sigmas",
    "n_gmp_features",
    "GMP_HYPERPARAMETERS",
    "derive_gmp_prior",
    "DerivedPrior",
]


# Lazy re-exports: `mfbo priors ...` and `import mfbo.priors._cli` stay cheap (no scipy/ASE until needed).
_LOCATIONS = {
    "_base": ("Prior", "get_prior_class", "load_prior", "prior_from_config", "register_prior", "registered_priors"),
    "_beliefs": ("Belief", "ProductPrior"),
    "_expr": ("DERIVED", "Constraint", "ConstraintError", "parse_constraint"),
    "_file": ("PriorFileError", "PriorSpec", "dump_prior_spec", "load_prior_file", "merge_prior_specs",
              "parse_prior_dict", "write_prior_file"),
    "_gmp_space": ("GMP_HYPERPARAMETERS", "gmp_fp_params", "gmp_sigmas", "n_gmp_features"),
    "_derive": ("derive_gmp_prior", "DerivedPrior"),
}
_WHERE = {name: module for module, names in _LOCATIONS.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(f"mfbo.priors.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mfbo.priors' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
