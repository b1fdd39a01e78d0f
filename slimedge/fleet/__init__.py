"""Host side of a running fleet: the MQTT broker for runs and tests (`broker`), broker
credentials and ACL (`credentials`), and later push, controller and `fleet up`.

Submodules are imported on use.
"""
