from tests.firmware.conftest import flash, gateway  # noqa: F401 - the firmware tests' fixtures
