"""The delivery pipeline both faces share: decide (pure) -> prepare (store, links, render, trace, seal) -> relay.

Import the stages from their modules (delivery.decide, delivery.prepare, delivery.relay,
delivery.pipeline): this package imports nothing, so config can read delivery.policy.
"""
