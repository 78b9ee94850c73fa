"""CloudLand: a cloud-native application platform on one machine."""

__version__ = "0.1.0"
