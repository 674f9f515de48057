"""The local controller API (docs/local-api.md): SunSpec Modbus TCP server, MQTT, AMQP and Prometheus
metrics, as tasks in the task process. They read the image the scan publishes; what clients ask for goes
through one function (requests.py) and never straight to an output."""
