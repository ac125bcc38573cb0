"""OpenTelemetry traces and metrics of every port call, when the application configures them.

Install the ``otel`` extra (``pip install 'crm-infra[otel]'``: the OpenTelemetry API) and
configure an SDK in the application, as for any instrumented library: crm-infra asks the global
providers for its tracer and meter (scope ``crm_infra``) and emits one span per port call,
duration histograms, ``hit`` counts and the state of its connection pools. Without the extra,
or with it but no SDK configured, nothing of OpenTelemetry is imported by crm-infra and a call
pays one dictionary lookup (:mod:`crm_infra.telemetry.switch`). What is emitted, attribute by
attribute: docs/operations.md, "Traces and metrics".

For the rest of crm-infra: :func:`count` and :func:`record` add to a counter or histogram by
name; :func:`traced` and :func:`traced_block` hook an adapter method; :func:`watch_pools`
puts a client's pools under observation.
"""

from crm_infra.telemetry.calls import Call, CallSpec, error_type
from crm_infra.telemetry.hooks import traced, traced_block
from crm_infra.telemetry.pools import watch_pools, watched_pools
from crm_infra.telemetry.switch import AttributeValue, active, count, record

__all__ = [
    "AttributeValue",
    "Call",
    "CallSpec",
    "active",
    "count",
    "error_type",
    "record",
    "traced",
    "traced_block",
    "watch_pools",
    "watched_pools",
]
