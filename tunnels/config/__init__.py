"""Server and client configuration, from a TOML file or from code, validated before use.

Every error names the file, the field, what was found and what was expected, and is raised
before anything is created (no socket, TUN device or route), so a bad file changes nothing.
`server.py` documents the server's file ([server], [users], [ports], [addresses],
[authentication], [accounting], [[policies]]), `client.py` the client's ([client]);
`fields.py` is what both share.
"""

from tunnels.config.client import ClientConfig
from tunnels.config.fields import (
    CALL_MODES,
    ESP_CIPHERS,
    IPSEC_LEVELS,
    PROTOCOLS,
    ConfigError,
    load_der,
)
from tunnels.config.server import (
    AccountingSettings,
    AddressSettings,
    AuthenticationSettings,
    RadiusServer,
    ServerConfig,
)

__all__ = ["CALL_MODES", "ESP_CIPHERS", "IPSEC_LEVELS", "PROTOCOLS", "AccountingSettings",
           "AddressSettings", "AuthenticationSettings", "ClientConfig", "ConfigError",
           "RadiusServer", "ServerConfig", "load_der"]
