"""Export tests use the shared tiny checkpoint / frame folder fixtures from tests/conftest.py."""
