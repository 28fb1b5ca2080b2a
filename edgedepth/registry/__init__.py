"""Model registry: signing keys, publishing signed versions, and device-side download and updates.

keys.py (Ed25519 key pairs) · signing.py (manifest.sig, verify_signed_bundle, BundleRejected) ·
state.py (state.json: the signed registry state, and the device's record of the newest one seen) ·
index.py (index.json, informational; versions) · storage.py (dir / http(s) / s3 transports) · publish.py ·
client.py (RegistryClient) · updater.py (ModelUpdater) · health.py (HealthCheck).
"""
