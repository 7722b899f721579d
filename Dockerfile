# One image for api, worker and beat. The GPU worker builds with TORCH_SPEC set to a CUDA build of torch.
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=""
WORKDIR /srv/podbrief
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PODBRIEF_VAR_DIR=/srv/podbrief/var
# g++: the CPU worker compiles the native Whisper decoder for its own CPU at first use (app/asr/native_decoder);
# without it, CTranslate2's decoder runs instead (slower, same rules).
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
COPY templates ./templates
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url $TORCH_INDEX} "$TORCH_SPEC" \
 && pip install --no-cache-dir -e .
EXPOSE 8000
CMD ["podbrief", "run", "--no-worker", "--no-beat"]
