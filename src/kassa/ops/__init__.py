"""Operations: health checks and the record of background job runs."""
