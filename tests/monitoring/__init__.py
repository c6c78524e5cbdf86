"""Cloud Monitoring stand-in and client tests."""
