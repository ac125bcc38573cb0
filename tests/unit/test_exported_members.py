"""The public face: what ``import crm_infra`` offers is deliberate and pinned."""

from __future__ import annotations

import crm_infra
from crm_infra import errors


def test_all_is_sorted_and_complete() -> None:
    exported = crm_infra.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(crm_infra, name), name


def test_every_error_is_exported_from_the_package() -> None:
    assert set(errors.__all__) <= set(crm_infra.__all__)


def test_every_error_is_an_infra_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), crm_infra.InfraError), name


def test_input_errors_are_value_errors() -> None:
    for cls in (
        errors.ConfigError,
        errors.InvalidUserIdError,
        errors.InvalidSecretPathError,
        errors.NoRowsError,
        errors.DatabaseInputError,
        errors.KeyValueStoreInputError,
    ):
        assert issubclass(cls, ValueError), cls.__name__


def test_unavailable_errors_share_one_marker() -> None:
    for cls in (
        errors.SecretStoreUnavailableError,
        errors.DatabaseUnavailableError,
        errors.KeyValueStoreUnavailableError,
    ):
        assert issubclass(cls, errors.BackendUnavailableError), cls.__name__


def test_the_composition_root_is_exported() -> None:
    for name in (
        "AsyncInfrastructure",
        "ComponentHealth",
        "HealthReport",
        "Infrastructure",
        "Settings",
        "StartupError",
        "build_async_infrastructure",
        "build_infrastructure",
    ):
        assert name in crm_infra.__all__, name
