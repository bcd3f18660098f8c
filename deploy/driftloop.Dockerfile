# The driftloop service image for docker-compose.yml: the pinned lock (the same set the tests
# run) installed by the project's own setup script, then `driftloop serve`.
FROM python:3.11-slim
WORKDIR /app
COPY requirements/ requirements/
COPY scripts/ scripts/
COPY pyproject.toml README.md ./
COPY monitor/ monitor/
COPY judges/ judges/
COPY retrain/ retrain/
COPY driftloop/ driftloop/
RUN PYTHON=python3 scripts/setup-venv.sh /opt/venv
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
EXPOSE 8100
ENTRYPOINT ["driftloop", "serve"]
CMD ["--config", "/etc/driftloop/driftloop.toml"]
