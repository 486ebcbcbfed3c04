"""Devices: devices.yaml, arithmetic peaks, device state, and the transports that reach them."""
from harness.devices.config import DEFAULT_DEVICES_FILE, Device, DeviceRegistry, load_devices

__all__ = ["DEFAULT_DEVICES_FILE", "Device", "DeviceRegistry", "load_devices"]
