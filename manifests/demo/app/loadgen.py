"""Demo traffic: one request to the frontend every INTERVAL seconds, forever, so spans keep
arriving at the collector without anyone driving the app by hand."""

import os
import time
import urllib.error
import urllib.request

TARGET_URL = os.environ.get("TARGET_URL", "http://frontend:8080/")
INTERVAL = float(os.environ.get("INTERVAL_SECONDS", "2"))

while True:
    try:
        with urllib.request.urlopen(TARGET_URL, timeout=5) as response:
            print(f"GET {TARGET_URL} -> {response.status}", flush=True)
    except (urllib.error.URLError, OSError) as error:
        print(f"GET {TARGET_URL} failed: {error}", flush=True)
    time.sleep(INTERVAL)
