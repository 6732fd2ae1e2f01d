# The production image: the official Airflow 3.3 image plus this project (pipeline, mmsr_model,
# its SQL and DAG file are package data). PyPI's Linux torch wheels bundle CUDA, so the same image runs on a GPU box and,
# with `model.device: auto`, falls back to CPU where no GPU is visible.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

ARG AIRFLOW_VERSION
ENV MMSR_SRC=/opt/mmsr \
    MMSR_HOME=/opt/mmsr-home \
    HF_HOME=/opt/mmsr-home/cache/huggingface \
    PIP_NO_CACHE_DIR=1

USER root
RUN mkdir -p "${MMSR_SRC}" "${MMSR_HOME}" && chown -R airflow:0 "${MMSR_SRC}" "${MMSR_HOME}"
USER airflow

# dependencies first (cached layer), then the source; editable so configs/ are found
COPY --chown=airflow:0 pyproject.toml README.md ${MMSR_SRC}/
COPY --chown=airflow:0 pipeline ${MMSR_SRC}/pipeline
COPY --chown=airflow:0 mmsr_model ${MMSR_SRC}/mmsr_model
COPY --chown=airflow:0 configs ${MMSR_SRC}/configs
RUN pip install "apache-airflow==${AIRFLOW_VERSION}" -e "${MMSR_SRC}[postgres]"

# Airflow parses the DAG file shipped inside the package
ENV AIRFLOW__CORE__DAGS_FOLDER=${MMSR_SRC}/pipeline/orchestration/dags
