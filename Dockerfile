# Sluice: the Endpoint Picker image. `docker build -t sluice .`
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# A fixed numeric non-root user, so `runAsNonRoot` can verify it.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin sluice
USER 10001
# 9002 ext_proc gRPC, 9003 gRPC health, 9090 Prometheus metrics.
EXPOSE 9002 9003 9090
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["sluice", "serve"]
