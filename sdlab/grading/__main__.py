from sdlab.grading.grader import main

main()
