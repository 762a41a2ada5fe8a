# A wheelhouse (docker/build_image.py makes it with `pip download`) as an image, so that the
# Dockerfile's builder stage can copy it in with `COPY --from`: the build then needs no package
# index. Built with the wheelhouse folder as its context:
#   docker build -f docker/wheels.Dockerfile -t seco-deploy-wheels:cpu build/wheelhouse/cpu
FROM scratch
COPY . /wheels/
