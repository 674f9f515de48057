"""The operator HMI in the browser (docs/hmi.md): an aiohttp server in the task process, never in the scan
process. It reads the image the scan publishes and the scan's event stream; what an operator asks for goes
through the same typed commands as every other task (runtime/commands.py), so the safety layer keeps the
last word whoever clicks."""
