# fastgw container image: the wheels are built in a first stage with the
# compiler and Python headers; the final image has only the interpreter,
# the installed wheels and a non-root user (no compiler, no build tools).
#
#   docker build -t fastgw .
#   docker run --rm -p 8080:8080 -v $PWD/gateway.yaml:/etc/fastgw/gateway.yaml:ro fastgw
#
# The config's listeners must bind 0.0.0.0 (or FASTGW_LISTEN=0.0.0.0:8080),
# and an admin listener beyond loopback needs a token (admin.token_env).

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY fastgw ./fastgw
# fastgw and every dependency as wheels, so the final stage compiles nothing.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[redis]'

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin fastgw \
 && mkdir -p /etc/fastgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels 'fastgw[redis]' && rm -rf /wheels
COPY examples/gateway.yaml /etc/fastgw/gateway.yaml
USER 10001:10001
# JSON process logs on stdout (the default off a terminal, said here anyway).
ENV FASTGW_LOG_FORMAT=json PYTHONUNBUFFERED=1
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FASTGW_ADMIN_PORT', '9901') + '/livez', timeout=2)"
ENTRYPOINT ["fastgw"]
CMD ["run", "--config", "/etc/fastgw/gateway.yaml"]
