"""Signed updates (docs/updates.md): release bundles verified on the gateway, delivered from
the cloud, installed with shadow evaluation (models), a healthy-restart trial (gateway
config) or a staged firmware rollout over the air to the boards, each with rollback."""
