# The shadowlens image for docker-compose.yml: the worker, the replayer and `db migrate`.
# Built from the repository root:  docker build -f deploy/shadowlens.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# the gateway SDK first: its own distribution, which the service depends on (not on PyPI)
COPY gateway/ gateway/
# the package and what its build reads (pyproject.toml names README.md as the readme)
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY comparators/ comparators/
COPY pipeline/ pipeline/
COPY judge/ judge/
COPY job/ job/
COPY store/ store/
COPY replay/ replay/
COPY report/ report/
COPY cli/ cli/
COPY streams/ streams/
RUN pip install ./gateway . \
    && useradd --system --uid 10001 --home-dir /home/shadowlens --create-home shadowlens

USER shadowlens
WORKDIR /home/shadowlens
EXPOSE 9464
CMD ["shadowlens", "--help"]
